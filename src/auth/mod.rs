//! Sessions without an auth service: connres answers the auth requests of the names
//! the `auth:` block declares. [`jwt`] verifies a JWT against configured keys and finds
//! one in request headers; [`request`] answers an auth request (the JWT where the
//! method looks, the token built from its claims, or a logout). Pure: no NATS, no clock
//! of its own, no file or network reads.

pub mod jwt;
pub mod request;
pub mod resume;
pub mod url;

#[cfg(test)]
mod tests;
