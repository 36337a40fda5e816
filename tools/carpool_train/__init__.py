"""Fine-tuning base models into `<name>_trained` classifiers: `carpool train` (see command.py)."""
