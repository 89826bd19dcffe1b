"""The daemon's view into the cluster's API: node feature labels and health Events."""
