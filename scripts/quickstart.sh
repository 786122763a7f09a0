#!/usr/bin/env bash
# The whole pipeline on the offline default (MiniLM preset, GLUE TSVs): fine-tune a teacher,
# distil it with ReptileDistil, evaluate and write the GLUE submission file.
#   bash scripts/quickstart.sh                 # RTE
#   TASK=mrpc bash scripts/quickstart.sh       # any task with train and dev files
# A step whose output already exists is reused, never overwritten.
source "$(dirname "$0")/setup.sh"
TASK="${TASK:-rte}"
TEACHER="model/$TASK/teacher"
STUDENT="model/$TASK/reptile-skip-a0.5-T5.0"
EPOCHS="${EPOCHS:-2}"

echo "== 1/3 fine-tune the teacher (MiniLM-L6) -> $TEACHER"
if [ -f "$TEACHER/config.json" ]; then echo "   exists, reused"; else
  python finetune_teacher.py task="$TASK" epochs="$EPOCHS"; fi

echo "== 2/3 ReptileDistil: 3-layer student, strategy skip -> $STUDENT"
if [ -f "$STUDENT/student/config.json" ]; then echo "   exists, reused"; else
  python train.py task="$TASK" strategy=skip epochs="$EPOCHS"; fi

echo "== 3/3 predict: dev metrics and the GLUE test submission -> predictions/$TASK"
python predict.py task="$TASK" model_dir="$TEACHER" split=dev output_dir="predictions/$TASK/teacher"
python predict.py task="$TASK" model_dir="$STUDENT/student" split=dev output_dir="predictions/$TASK"
python predict.py task="$TASK" model_dir="$STUDENT/student" output_dir="predictions/$TASK" overwrite=true zip=true
