synthcl eval runs/joint-0.5 --report                          # runs/joint-0.5/report/report.md and its plots
synthcl eval runs/joint-1.0 --protocol efficiency --report    # probe first, then report
