"""The Carpool operator: reconciles BatchingPolicy resources into serving pods (`carpool operator`).

Layers, highest first (enforced by .importlinter): command > handlers > reconciler >
kube | configpush > resources | conditions | rbac > spec > settings. Nothing here imports torch or
any part of the serving pod but `serving.settings`.
"""
