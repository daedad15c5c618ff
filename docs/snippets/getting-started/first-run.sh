synthcl recipes list                                # the bundled recipes, one line each
synthcl train quickstart --out runs/quickstart      # SimCLR on Fashion-MNIST; writes a run directory
synthcl eval runs/quickstart                        # linear probe and kNN top-1 of the frozen backbone
