"""Training room: the wire protocol (Python side), the env whose far end is a tab, vec envs, PPO."""
