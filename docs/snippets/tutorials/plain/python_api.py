import synthcl

run_dir = synthcl.train("quickstart", out="runs/qs-python", overrides=["train.epochs=1"])
print(synthcl.evaluate_run(run_dir))  # {'linear_top1': ..., 'knn_top1': ..., ...}
