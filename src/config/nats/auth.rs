//! Choosing the one way connres authenticates from what a file or the flags give.

use std::fmt;
use std::path::PathBuf;

use super::{NatsAuth, Secret};
use crate::config::Pos;

/// The credentials given in one place, each with what to call it in an error.
#[derive(Default)]
pub(super) struct Given<L> {
    pub(super) creds: Option<(L, PathBuf)>,
    pub(super) nkey: Option<(L, PathBuf)>,
    pub(super) user: Option<(L, String)>,
    pub(super) password: Option<(L, Secret)>,
    pub(super) token: Option<(L, Secret)>,
    pub(super) url: Option<(L, NatsAuth)>,
}

impl<L: fmt::Display + Clone> Given<L> {
    /// The one way to authenticate that was given, if any; more than one is an error
    /// naming two of them, blamed on the second.
    fn choose(self) -> Result<Option<NatsAuth>, (L, String)> {
        let mut ways: Vec<(L, NatsAuth)> = Vec::new();
        if let Some((l, p)) = self.creds {
            ways.push((l, NatsAuth::Creds(p)));
        }
        if let Some((l, p)) = self.nkey {
            ways.push((l, NatsAuth::NKey(p)));
        }
        match (self.user, self.password) {
            (Some((l, user)), Some((_, password))) => {
                ways.push((l, NatsAuth::UserPassword { user, password }))
            }
            (Some((l, _)), None) => return Err((l.clone(), format!("{l} needs a password"))),
            (None, Some((l, _))) => return Err((l.clone(), format!("{l} needs a user"))),
            (None, None) => {}
        }
        if let Some((l, t)) = self.token {
            ways.push((l, NatsAuth::Token(t)));
        }
        if let Some(w) = self.url {
            ways.push(w);
        }
        let mut ways = ways.into_iter();
        let first = ways.next();
        match (first, ways.next()) {
            (Some((a, _)), Some((b, _))) => Err((
                b.clone(),
                format!("give one way to authenticate to NATS, not both {a} and {b}"),
            )),
            (first, None) => Ok(first.map(|(_, auth)| auth)),
            (None, Some(_)) => unreachable!("an iterator yields after None"),
        }
    }
}

impl Given<&'static str> {
    pub(super) fn choose_flags(self) -> Result<Option<NatsAuth>, String> {
        self.choose().map_err(|(_, message)| message)
    }
}

impl Given<Pos> {
    pub(super) fn choose_in_file(self) -> Result<Option<NatsAuth>, (Pos, String)> {
        // Name the keys as the file writes them.
        let named = Given {
            creds: self.creds.map(|(p, v)| (Named(p, "`nats.creds`"), v)),
            nkey: self.nkey.map(|(p, v)| (Named(p, "`nats.nkey`"), v)),
            user: self.user.map(|(p, v)| (Named(p, "`nats.user`"), v)),
            password: self.password.map(|(p, v)| (Named(p, "`nats.password`"), v)),
            token: self.token.map(|(p, v)| (Named(p, "`nats.token`"), v)),
            url: self
                .url
                .map(|(p, v)| (Named(p, "credentials in `nats.url`"), v)),
        };
        named.choose().map_err(|(n, m)| (n.0, m))
    }
}

/// A key's position and how to call it.
#[derive(Clone, Copy)]
struct Named(Pos, &'static str);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
}
