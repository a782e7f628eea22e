"""What the routes and the worker do, one module per area (the FastAPI full-stack template's
services): ``uploads`` (uploads and imports), ``customers`` (erasure), ``jobs`` (an owner's
jobs), ``releases`` (publishing a job), ``grants`` (who sees a release), ``requests``
(merchants' segmentation requests), ``segmentation`` (single-owner runs: window, features,
choose k, encrypted k-means, profiles), ``users`` (accounts and passwords), ``permissions`` (the
role × permission matrix). Routes stay thin: they check the permission and the form, then
call one of these.
"""
