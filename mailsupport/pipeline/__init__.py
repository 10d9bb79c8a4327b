"""The pipeline: one transaction per stored message, parse → screen → identify → thread → apply."""
