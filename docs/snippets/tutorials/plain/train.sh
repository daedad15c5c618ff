synthcl recipes show quickstart                                     # the recipe, as written
synthcl train quickstart --out runs/qs                              # train; writes runs/qs
synthcl train quickstart optim.lr=0.1 data.fraction=0.5 --out runs/qs-half   # dotted overrides
synthcl train quickstart model.learner=mocov2 --out runs/qs-moco    # another learner, same recipe
synthcl train quickstart --out runs/qs --resume                     # continue a stopped run
