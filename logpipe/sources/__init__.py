"""Sources: the I/O shells. They accept sockets, move bytes to the sans-IO framer and parser
in whole chunks, and count what they receive and drop."""
