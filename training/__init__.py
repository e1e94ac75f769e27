"""The federated training side-path on Flower: LoRA adapters and soft prompts from the silos' data."""
