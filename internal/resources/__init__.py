"""Resources served to the kubelet: their names, and one manager per resource."""
