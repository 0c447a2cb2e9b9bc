"""NumPy REINFORCE trainer for Gymnasium CartPole-v1."""
