"""Applications: thin layers over a trained run (anomaly detection, denoising, classification, ...)."""
