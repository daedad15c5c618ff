synthcl recipes list                                # the bundled recipes, one line each
synthcl train quickstart --out runs/quickstart      # SimCLR on Fashion-MNIST; writes a run directory
synthcl eval runs/quickstart                        # few-label and full linear probes, kNN top-1
