"""The Kubeflow pipelines: ``training`` (prep -> SFT -> LAD -> evaluate -> register) and
``retraining`` (the scheduled job: new data, champion as the start, challenger vs champion)."""
