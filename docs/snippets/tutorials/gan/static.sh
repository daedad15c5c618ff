# the weak baseline: samples of the frozen GAN pretrained above, as extra instances
synthcl train fashion-mnist-static generator.pretrained=runs/fashion-mnist-gan --out runs/static
synthcl eval runs/static
