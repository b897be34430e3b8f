"""odecast: forecasting for irregularly sampled time series with latent neural ODEs."""

__version__ = "0.1.0"
