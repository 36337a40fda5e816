"""The Carpool operator: reconciles BatchingPolicy resources into serving pods (`carpool operator`).

Layers, highest first (enforced by .importlinter's operator-layers contract):

    command                                  `carpool operator`: Kopf's settings, the registry, run
    handlers                                 every Kopf handler: thin glue, status patches
    reconciler | autoscaler | experimenter   the passes, each a pipeline of named steps
    kube | configpush | prometheus           the only I/O: Kubernetes API, the pods, Prometheus
    resources | scaling | conditions | rbac  pure builders and rules (experiment: an A/B test's
      | experiment                           arithmetic and significance tests)
    spec                                     the BatchingPolicy's fields, parsed
    settings | quantity                      the operator's settings; Kubernetes quantities

Modules on one line import none of each other. Nothing here imports torch or any part of the
serving pod but `serving.settings`.
"""
