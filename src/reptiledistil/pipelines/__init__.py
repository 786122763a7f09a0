"""What the three scripts do, one module each: teacher.py (finetune_teacher.py), distil.py (train.py),
predict.py (predict.py). Plain functions of a composed config, called by the scripts and the tests."""
