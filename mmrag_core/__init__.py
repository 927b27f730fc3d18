"""mmrag core library: plain Python, no Prefect or Ray."""
