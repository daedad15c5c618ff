synthcl train fashion-mnist-scarce --out runs/scarce                 # plain SimCLR on 0.5% of the images
synthcl train fashion-mnist-scarce-joint --out runs/scarce-joint     # warms its GAN up on them, then trains jointly
synthcl train fashion-mnist-scarce data.fraction=1.0 --out runs/scarce-all   # the same learner steps, all images
