"""The results grid: teacher, fine-tuned student, vanilla KD, ReptileDistil and MetaDistil per task, several seeds.

Every run goes through the same entry scripts a user runs (finetune_teacher.py, train.py, predict.py) and
ends as one JSON under results/<preset>/<task>/ (config, best and final dev metrics, the teacher's own dev
score before and after distillation, wall time, machine, date). A run whose JSON exists is skipped, so the
grid can be filled over several sittings and committed as it grows; models go to the git-ignored
model/grid/. A grid's runs differ only in method and seed: before anything trains, the runs it would add next to
recorded ones are composed and refused if their configuration differs (the preset changed since, other overrides).
At the end (or with --report alone) the tables and the chart are rebuilt from the JSON files,
followed by the hand-written results/<preset>/FINDINGS.md, into results/<preset>/README.md, whose first line
names the command that runs the whole grid (its tag, teachers and overrides) and lists what the grid's calls have
asked for and not recorded yet (both kept in grid.json for --report).

  python bench/reproduce.py                                  # the offline grid (MiniLM preset), all tasks
  python bench/reproduce.py --tasks mrpc --seeds 1 2 3       # part of it
  python bench/reproduce.py --jobs 12 -- trainer=gpu         # on a GPU: students in parallel; extra overrides
  python bench/reproduce.py --methods finetune kd reptile     # without MetaDistil (the slowest student on a CPU)
  python bench/reproduce.py --report                         # only rebuild results/<preset>/README.md and the chart
  python bench/reproduce.py --tasks cola --seeds 1 --results-tag slr2e-4 --reuse-teachers -- student_lr=2e-4
                                                             # a probe: the grid's teachers, other student settings
  python bench/reproduce.py --results-tag gpu-ep8 --teacher-override trainer=gpu -- trainer=gpu model.distil.epochs=8
                                                             # its own teachers, with the overrides they take
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, portable  # noqa: E402

from reptiledistil.core.files import write_json_atomic  # noqa: E402
from reptiledistil.data.metrics import selection_score  # noqa: E402
from reptiledistil.data.tasks import get_task  # noqa: E402
from reptiledistil.methods import METHODS as METHOD_CLASSES, method_class  # noqa: E402
from reptiledistil.training.resume import checkpoint_path  # noqa: E402

METHODS = tuple(cls.key for cls in METHOD_CLASSES)
# Small dev sets (RTE 277, MRPC 408 examples) need several seeds to say anything; the others get one.
QUIET = "trainer.enable_progress_bar=false"  # the logs hold the console output; bars would fill them
# fp32 everywhere: precision=auto picks bf16 on CPUs with bf16 units, so an unpinned grid's numbers would depend on
# the machine it ran on (the first grid ran on an AVX2-only CPU, hence in fp32). A GPU grid overrides this (-- ...).
FP32_TRAIN, FP32_PREDICT = "trainer.precision=32-true", "precision=fp32"


def named_precision(extra: list[str]) -> str | None:
    """The trainer.precision the grid's own overrides name, if any."""
    return next((o.split("=", 1)[1] for o in extra if o.lstrip("+").startswith("trainer.precision=")), None)


def pinned(extra: list[str]) -> list[str]:
    """fp32 unless the grid's own overrides name a precision (Hydra refuses one key set twice)."""
    return [] if named_precision(extra) is not None else [FP32_TRAIN]


def predict_precision(extra: list[str]) -> str:
    """predict.py's precision for a grid's evaluations: bf16 autocast where the grid trains in bf16, so a teacher's
    score after distillation is measured as its score before was (one precision per grid), else fp32."""
    return "precision=bf16" if (named_precision(extra) or "").startswith("bf16") else FP32_PREDICT
# Settings added after a grid's first runs, with the value those runs had: a record without the key ran with it, and
# so do the runs a grid adds next to such records (a grid is one experiment; the new default is for new grids).
LEGACY = {"data.group_by_length": False}


def legacy_overrides(records: list[Path], given: list[str]) -> list[str]:
    """`key=<old value>` for each LEGACY key that these records lack and the grid's overrides do not set."""
    records = [json.loads(p.read_text()).get("config", {}) for p in records]
    return [f"{k}={str(v).lower()}" for k, v in LEGACY.items()
            if records and k not in flat(records[0]) and not any(o.lstrip("+").startswith(f"{k}=") for o in given)]


DEFAULT_SEEDS = {"rte": [1, 2, 3], "mrpc": [1, 2, 3], "stsb": [1], "cola": [1], "sst2": [1]}
DEFAULT_TASKS = ("rte", "mrpc", "stsb", "cola")  # the full grid; the report lists what it still lacks


def killed_hint(code: int) -> str:
    """Why a run that died without a word of its own (its log just stops) most likely died."""
    if code != -signal.SIGKILL:
        return ""
    return (": killed by SIGKILL, on Linux most often the out-of-memory killer (`dmesg | grep -i killed` says); "
            "run fewer at once (--jobs) or beside fewer other jobs, then rerun: it resumes from its last checkpoint")


def run_script(script: str, overrides: list[str], log: Path) -> tuple[float, float]:
    """Run an entry script as a user would; its console output goes to `log`. Returns (wall s, CPU s).

    CPU seconds (the child's user + system time) stay comparable when the machine is shared or the grid is paused
    (kill -STOP / -CONT); wall time does not.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, script, *overrides], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{script} {' '.join(overrides)} failed (exit {code}{killed_hint(code)}); see {log}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def keep_or_resume(out: Path) -> str:
    """An interrupted run (killed grid, machine restart) continues from its checkpoint; anything else left in its
    folder is replaced."""
    return "resume=true" if checkpoint_path(out).is_file() else "overwrite=true"


def cost(wall: float, cpu: float, metrics: dict, overrides: list[str]) -> dict:
    """The record's wall_s and cpu_s: a resumed run adds what its earlier attempts spent up to the checkpoint it
    resumed from (the run's spent_before_resume); where that is not known (a checkpoint older than the record),
    `cost_complete` is false and the time counts only the last part."""
    earlier = metrics.get("spent_before_resume")
    resumed = "resume=true" in overrides
    if earlier is None:
        return {"wall_s": wall, "cpu_s": cpu, "resumed": resumed, "cost_complete": not resumed}
    return {"wall_s": wall + earlier["wall_s"], "cpu_s": cpu + earlier["cpu_s"], "resumed": resumed,
            "cost_complete": True}


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, portable(doc))


def stamp() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    code = ["src", "conf", "train.py", "finetune_teacher.py", "predict.py"]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *code], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "commit": commit or None, "code_changed_since_commit": bool(dirty)}


# Keys that differ between runs of one grid by design (where the run writes, and its seed).
PER_RUN = ("seed", "output_dir", "log_dir", "logger.save_dir", "trainer.default_root_dir", "overwrite", "resume")
# Keys a method sets for itself (its node, the teacher's learning rate and optimizer): compared within a method only.
PER_METHOD = ("method", "teacher_lr", "teacher_optimizer", "save_teacher")


def flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def composed(script: str, overrides: list[str]) -> dict:
    """The configuration `script` would run with (--cfg job --resolve), its paths as records hold them."""
    import yaml

    ov = [o for o in overrides if not o.startswith("hydra.")] + ["log_dir=."]  # --cfg makes no run folder
    out = subprocess.run([sys.executable, script, *ov, "--cfg", "job", "--resolve"], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"{script} refuses the grid's overrides:\n{out.stderr.strip()}")
    return portable(yaml.safe_load(out.stdout))


def config_diff(recorded: dict, new: dict, *, same_method: bool) -> dict[str, tuple]:
    """{key: (recorded, new)} where two runs' configurations differ beyond their own paths and seed."""
    now = flat(new)
    old = {**{k: v for k, v in LEGACY.items() if k in now}, **flat(recorded)}  # a record older than the key
    skip = PER_RUN + (() if same_method else PER_METHOD)
    return {k: (old.get(k), now.get(k)) for k in sorted(old.keys() | now.keys())
            if old.get(k) != now.get(k) and k.split(".")[0] not in skip and k not in skip}


class Grid:
    def __init__(self, preset: str, extra: list[str], tag: str | None = None, teachers_from: Grid | None = None,
                 *, teacher_extra: list[str] | None = None):
        name = f"{preset}-{tag}" if tag else preset  # e.g. minilm-gpu: bf16 on a GPU is another experiment
        self.preset, self.extra, self.teachers_from = preset, extra, teachers_from
        # the teachers' own overrides (finetune_teacher.py refuses the students' model.distil.*, method.*, ...)
        self.teacher_extra = extra if teacher_extra is None else teacher_extra
        self.results = ROOT / "results" / name
        self.extra = extra + legacy_overrides(sorted(self.results.glob("*/*-seed*.json")), extra)
        self.teacher_extra = self.teacher_extra + legacy_overrides(sorted(self.results.glob("*/teacher.json")),
                                                                   self.teacher_extra)
        self.models = ROOT / "model" / "grid" / name
        # Paths handed to the scripts (and so recorded in the JSONs) are relative to the repository, where the
        # scripts run: no record holds the absolute path of the machine that made it.
        self.rel_models = self.models.relative_to(ROOT)
        self.failed = 0

    def teacher_path(self, task: str) -> Path:
        return self.teachers_from.teacher_path(task) if self.teachers_from else self.models / task / "teacher"

    def teacher(self, task: str) -> Path:
        """Fine-tune (once per task) and record the teacher; returns its directory."""
        out, result = self.models / task / "teacher", self.results / task / "teacher.json"
        if self.teachers_from is not None:  # a probe of student settings: the untagged grid's teacher (made if missing)
            out = self.teachers_from.teacher(task)
            if not result.exists():  # its record too, so this grid's tables show the teacher
                write_json(result, json.loads((self.teachers_from.results / task / "teacher.json").read_text()))
            return out
        recorded = result.exists()
        if recorded and (out / "config.json").is_file():
            return out
        if recorded:  # e.g. a fresh clone: the JSON is committed, the model (model/grid/) is not
            print(f"   {result.relative_to(ROOT)} exists but its model {out} does not: fine-tuning it again "
                  "(same seed and settings); the recorded JSON is kept", flush=True)
        overrides = [f"task={task}", f"model={self.preset}", f"output_dir={out.relative_to(ROOT)}",
                     keep_or_resume(out), QUIET, *pinned(self.teacher_extra),
                     f"hydra.run.dir={self.rel_models / task / 'logs' / 'teacher'}", *self.teacher_extra]
        started = stamp()  # the code the run starts with (a commit made while it runs must not be credited)
        wall, cpu = run_script("finetune_teacher.py", overrides, self.models / task / "teacher.log")
        if recorded:
            return out
        metrics = json.loads((out / "dev_metrics.json").read_text())
        write_json(result, {"task": task, "method": "teacher", "seed": metrics["config"]["seed"], "overrides": overrides,
                            "best": metrics["best"], "final": metrics["final"], "history": metrics["history"],
                            "config": metrics["config"], "hardware": metrics.get("hardware"),
                            **cost(wall, cpu, metrics, overrides), **started,
                            "finished": stamp()["date"]})
        return out

    def student_overrides(self, task: str, method: str, seed: int, teacher: Path) -> list[str]:
        out = self.models / task / f"{method}-seed{seed}"
        return [f"task={task}", f"model={self.preset}", f"method={method}", "strategy=skip", f"seed={seed}",
                f"teacher_dir={teacher.relative_to(ROOT)}", f"output_dir={out.relative_to(ROOT)}", keep_or_resume(out),
                QUIET, *pinned(self.extra), f"hydra.run.dir={self.rel_models / task / 'logs' / f'{method}-seed{seed}'}",
                *self.extra]

    def check_one_config(self, task: str, methods: list[str], seed: int) -> None:
        """A grid compares runs that differ only in method and seed. Runs it would add to a task that already has
        some are composed first (train.py --cfg job --resolve) and refused, before anything trains, where their
        configuration differs from a recorded run's: the preset changed since, or the grid's overrides did."""
        recorded = {p.stem.split("-seed")[0]: p for p in sorted((self.results / task).glob("*-seed*.json"))}
        if not recorded:
            return
        for method in methods:
            path = recorded.get(method) or next(iter(recorded.values()))
            record = json.loads(path.read_text())
            new = composed("train.py", self.student_overrides(task, method, seed, self.teacher_path(task)))
            diff = config_diff(record["config"], new, same_method=record["method"] == method)
            if diff:
                shown = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in list(diff.items())[:6])
                sys.exit(f"{path.relative_to(ROOT)} was run with another configuration than {method} seed {seed} "
                         f"would be ({shown}{', ...' if len(diff) > 6 else ''}). A grid's runs differ only in method "
                         f"and seed: pass the overrides that give the recorded configuration (its \"overrides\" "
                         f"list), or write these runs to another grid (--results-tag <name>).")

    def student(self, task: str, method: str, seed: int, teacher: Path) -> str:
        try:
            return self._student(task, method, seed, teacher)
        except RuntimeError as e:  # one failed run does not stop the others; it is retried next time
            self.failed += 1
            return f"FAILED: {e}"

    def _student(self, task: str, method: str, seed: int, teacher: Path) -> str:
        result = self.results / task / f"{method}-seed{seed}.json"
        if result.exists():
            return f"{result.relative_to(ROOT)} exists, skipped"
        out = self.models / task / f"{method}-seed{seed}"
        overrides = self.student_overrides(task, method, seed, teacher)
        started = stamp()
        wall, cpu = run_script("train.py", overrides, self.models / task / f"{method}-seed{seed}.log")
        metrics = json.loads((out / "metrics.json").read_text())
        doc = {"task": task, "method": method, "seed": seed, "overrides": overrides, "best": metrics["best"],
               "final": metrics["final"], "history": metrics["history"], "config": metrics["config"],
               "hardware": metrics.get("hardware"), **cost(wall, cpu, metrics, overrides)}
        teacher_before = json.loads((self.results / task / "teacher.json").read_text())["best"]
        doc["teacher_before"] = teacher_before
        if method_class(method).teacher_learns:  # what the teacher itself scores after it has been taught to teach
            rel = out.relative_to(ROOT)
            run_script("predict.py", [f"task={task}", "split=dev", f"model_dir={rel / 'teacher'}",
                                      f"output_dir={rel / 'teacher_eval'}", "overwrite=true",
                                      predict_precision(self.extra), f"hydra.run.dir={rel / 'teacher_eval' / 'logs'}"],
                       self.models / task / f"{method}-seed{seed}-teacher-eval.log")
            after = json.loads((out / "teacher_eval" / f"{task}_dev_metrics.json").read_text())["dev"]
            doc["teacher_after"] = {**after, "selection": selection_score(get_task(task), after, "")}
        write_json(result, {**doc, **started, "finished": stamp()["date"]})
        return f"wrote {result.relative_to(ROOT)} ({wall:.0f} s)"


GRID_COMMAND = "grid.json"  # how the grid is run (its page's "Regenerate:" line) and what it was asked for


def plan_of(tasks, methods, seeds: list[int] | None) -> dict[str, dict[str, list[int]]]:
    """{task: {method: seeds}}: the runs a call asks for (each task's teacher implied)."""
    return {t: {m: list(seeds or DEFAULT_SEEDS.get(t, [1])) for m in methods} for t in tasks}


def recorded_plan(results: Path) -> dict[str, dict[str, list[int]]]:
    """What the grid's calls have asked for so far, from grid.json. A grid.json older than this record (a command
    only) stood for the preset's whole grid; no grid.json: nothing asked yet."""
    path = results / GRID_COMMAND
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("plan") or plan_of(DEFAULT_TASKS, METHODS, None)


def merged(a: dict, b: dict) -> dict[str, dict[str, list[int]]]:
    """Two plans as one: every task and method of either, with the union of their seeds."""
    out = {t: {m: list(s) for m, s in ms.items()} for t, ms in a.items()}
    for t, ms in b.items():
        for m, seeds in ms.items():
            out.setdefault(t, {})[m] = sorted(set(out.get(t, {}).get(m, [])) | set(seeds))
    return out


def grid_command(args: argparse.Namespace, results: Path) -> str:
    """The command that runs this whole grid (results/<grid>/), as the page says it: the grid's options and
    overrides, not the part of it a call asked for (--tasks, --seeds, --methods, --jobs). --report alone reads
    the recorded one."""
    recorded = results / GRID_COMMAND
    if args.report and recorded.is_file():
        return json.loads(recorded.read_text())["command"]
    parts = ["python bench/reproduce.py"]
    if args.preset != "minilm":
        parts.append(f"--preset {args.preset}")
    if args.results_tag:
        parts.append(f"--results-tag {args.results_tag}")
    if args.reuse_teachers is not None:
        parts.append("--reuse-teachers" + (f" {args.reuse_teachers}" if args.reuse_teachers else ""))
    parts += [f"--teacher-override {shlex.quote(o)}" for o in args.teacher_override or []]
    if args.overrides:
        parts += ["--", *map(shlex.quote, args.overrides)]
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="minilm", help="conf/model/<preset>.yaml")
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, help="default: 3 for RTE and MRPC, 1 elsewhere")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--jobs", type=int, default=1, help="student runs at once (a GPU fits several)")
    ap.add_argument("--results-tag", help="results/<preset>-<tag>/ (e.g. gpu) instead of results/<preset>/")
    ap.add_argument("--reuse-teachers", nargs="?", const="", metavar="TAG",
                    help="with --results-tag: the students learn from results/<preset>'s teachers (or those of "
                         "results/<preset>-<TAG>), fine-tuned there if missing: for probes whose overrides only the "
                         "students take (student_lr=, method.*, model.distil.*)")
    ap.add_argument("--teacher-override", action="append", metavar="KEY=VALUE",
                    help="an override for the teachers' runs only (repeatable), e.g. trainer=gpu; without it the "
                         "teachers take the students' overrides, or none with --reuse-teachers")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables and the chart")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = ap.parse_args()

    reuse = args.reuse_teachers
    if reuse is not None and (not args.results_tag or reuse == args.results_tag):
        sys.exit("--reuse-teachers takes another grid's teachers for a tagged one: add --results-tag <name> (not the "
                 "teachers' own tag).")
    teachers = (Grid(args.preset, args.teacher_override or [], reuse or None) if reuse is not None else None)
    grid = Grid(args.preset, args.overrides, args.results_tag, teachers_from=teachers,
                teacher_extra=args.teacher_override)
    command = grid_command(args, grid.results)
    if not args.report:
        for task in args.tasks:  # every configuration checked before the first run trains
            grid.check_one_config(task, args.methods, (args.seeds or DEFAULT_SEEDS.get(task, [1]))[0])
        plan = merged(recorded_plan(grid.results), plan_of(args.tasks, args.methods, args.seeds))
        write_json(grid.results / GRID_COMMAND, {"command": command, "plan": plan})
        for task in args.tasks:
            print(f"== {task}: teacher", flush=True)
            teacher = grid.teacher(task)
            runs = [(task, m, s, teacher) for s in (args.seeds or DEFAULT_SEEDS.get(task, [1])) for m in args.methods]
            with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                for msg in pool.map(lambda r: grid.student(*r), runs):
                    print(f"   {msg}", flush=True)
    from report_grid import write_report

    print(write_report(grid.results, grid.results.name, recorded_plan(grid.results), command=command))
    if grid.failed:
        sys.exit(f"{grid.failed} run(s) failed; their logs are named above. Rerun to retry them.")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
