pytest test_my_generator.py                                   # the contract every generator passes
synthcl train fashion-mnist-gan generator.name=mlp generator.options={} --code my_generator.py --out runs/mlp-gan
synthcl generate runs/mlp-gan --pairs --code my_generator.py --out mlp-pairs.png
synthcl train fashion-mnist-joint generator.name=mlp generator.options={} --code my_generator.py --out runs/mlp-joint
