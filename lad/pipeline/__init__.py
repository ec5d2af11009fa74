"""The Kubeflow pipeline around the library: the steps its components call, the embedded
default, compile/submit/schedule helpers, the multi-node launcher and the local run."""
