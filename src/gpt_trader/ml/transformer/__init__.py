"""The market transformer: attention biased by volume and volatility, temporal encoding, multi-asset."""
