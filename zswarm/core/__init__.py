"""Pure logic: no trio, zmq, zeroconf, HTTP or engine imports. Time is passed in as ``now``."""
