"""Training stages (SFT, RL) and what they share: engines and checkpoints."""
