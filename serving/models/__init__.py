"""Models the pod serves: the `Model` protocol, Hugging Face classifiers, the registry."""
