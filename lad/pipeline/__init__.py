"""The library the Kubeflow layer (lad.kubeflow) calls: the steps its components run and their
settings (from the typed configs), the local run, compile/submit/schedule helpers and the
multi-node launcher."""
