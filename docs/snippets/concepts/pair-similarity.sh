# after `synthcl train fashion-mnist-joint --out runs/joint`: pair similarity and hardness over training
python benchmarks/pair_similarity_plot.py runs/joint/metrics.csv --out docs/images/pair-similarity.png
