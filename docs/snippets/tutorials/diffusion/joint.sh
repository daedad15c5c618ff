# starts from the model pretrained above (generator.pretrained in the recipe)
synthcl train fashion-mnist-joint-diffusion --out runs/fashion-mnist-joint-diffusion
synthcl eval runs/fashion-mnist-joint-diffusion
synthcl train fashion-mnist-joint-diffusion generator.options.pair_method=ema --out runs/diffusion-ema-pairs
