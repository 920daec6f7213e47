//! Sessions without an auth service (issue 18). So far only its first building block:
//! [`jwt`], verifying a JWT against configured keys and finding one in request headers.
//! Pure (no NATS, no clock of its own, no file or network reads); the service does not
//! use it yet.

pub mod jwt;

#[cfg(test)]
mod tests;
