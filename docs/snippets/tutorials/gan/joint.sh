synthcl train fashion-mnist-joint --out runs/joint                          # both schemes, GAN warm-up included
synthcl eval runs/joint                                                     # probe the learner it trained
synthcl train fashion-mnist-joint synthesis.lambda_hard=0.05 synthesis.hardness_final=1.0 \
    synthesis.ratio=0.5 --out runs/joint-harder                             # knobs are recipe keys
