"""One evaluation path: settings, AIS (RBM), IWAE (VAE), Frechet distance on a classifier's features, and the records."""
