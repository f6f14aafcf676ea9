//! `ringd doctor`: what the kernel offers and what limits the server, with advice.
