"""analoglearn: training neural networks meant for analog, low-power hardware.

Two pillars share one house: energy-based learning (:mod:`analoglearn.energy`: convolutional
Hopfield networks, a fast asynchronous energy minimiser, EP/CL/CpL estimators) and noise-robust
training (:mod:`analoglearn.noise`, :mod:`analoglearn.robust`: weight-noise models, SAM/ASAM/RWP,
Monte-Carlo evaluation under noise).
"""

__version__ = "0.1.0"
