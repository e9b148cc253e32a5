//! Name policies (spec nameserver.md §2.1).
//!
//! - [`NamePolicy::Ascii`] (default): the reference regex `^[a-z0-9_-]{3,32}$` on the name as
//!   received for registrations; lookups are ASCII-lowercased first.
//! - [`NamePolicy::Unicode`] (opt-in): any UTF-8 name of 3 to 32 bytes without control
//!   characters, whitespace, `@`, `/` or `%`. The uniqueness key is NFKC of the lowercased NFKC
//!   form. Only names that already are their own key can be registered (so a stored name, whose
//!   exact bytes are signed, is also its key and two names that fold together cannot both
//!   exist); lookups fold the query and find the stored name. ASCII names behave as under the
//!   default policy, with a wider character set.

use std::str::FromStr;

use icu_normalizer::ComposingNormalizerBorrowed;
use waypost_protocol::names::{self, InvalidName, MAX_NAME_LEN, MIN_NAME_LEN};

/// Which names the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamePolicy {
    /// `^[a-z0-9_-]{3,32}$` (the reference server's rule).
    Ascii,
    /// Unicode names, NFKC-lowercase unique (opt-in).
    Unicode,
}

impl FromStr for NamePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ascii" => Ok(Self::Ascii),
            "unicode" => Ok(Self::Unicode),
            _ => Err("expected ascii or unicode".into()),
        }
    }
}

/// The uniqueness key of a Unicode name: NFKC(lowercase(NFKC(name))).
pub fn fold(name: &str) -> String {
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let lower = nfkc.normalize(name).to_lowercase();
    nfkc.normalize(&lower).into_owned()
}

fn unicode_syntax_ok(name: &str) -> bool {
    (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '@' | '/' | '%'))
}

impl NamePolicy {
    /// Checks a name for registration, exactly as received (percent-decoded).
    pub fn check_registration(self, name: &str) -> Result<(), InvalidName> {
        match self {
            Self::Ascii => names::check_registration_name(name).map(|_| ()),
            Self::Unicode if unicode_syntax_ok(name) && fold(name) == name => Ok(()),
            Self::Unicode => Err(InvalidName),
        }
    }

    /// The store key a lookup of `name` uses.
    pub fn lookup_key(self, name: &str) -> Result<String, InvalidName> {
        match self {
            Self::Ascii => names::normalize_lookup_name(name),
            Self::Unicode => {
                // Bound the work before normalising (NFKC can expand a little, never shrink much).
                if name.len() > 4 * MAX_NAME_LEN {
                    return Err(InvalidName);
                }
                let key = fold(name);
                if unicode_syntax_ok(&key) {
                    Ok(key)
                } else {
                    Err(InvalidName)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_policy_is_the_reference_regex() {
        let p = NamePolicy::Ascii;
        assert!(p.check_registration("alice").is_ok());
        assert!(p.check_registration("Alice").is_err());
        assert!(p.check_registration("été").is_err());
        assert_eq!(p.lookup_key("ALICE").as_deref(), Ok("alice"));
        assert!(p.lookup_key("été").is_err());
    }

    #[test]
    fn unicode_policy_folds_and_registers_only_folded_names() {
        let p = NamePolicy::Unicode;
        assert!(p.check_registration("été").is_ok());
        assert!(p.check_registration("alice").is_ok());
        assert!(p.check_registration("a.b!").is_ok());
        assert!(p.check_registration("Été").is_err(), "not lowercase");
        assert!(
            p.check_registration("e\u{301}te\u{301}").is_err(),
            "not NFC"
        );
        assert!(
            p.check_registration("ﬁne").is_err(),
            "compatibility ligature"
        );
        for bad in ["a b", "a@b", "a/b", "a%b", "a\u{7}b", "ab", &"é".repeat(17)] {
            assert!(p.check_registration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(p.lookup_key("ÉTÉ").as_deref(), Ok("été"));
        assert_eq!(p.lookup_key("E\u{301}te\u{301}").as_deref(), Ok("été"));
        assert_eq!(p.lookup_key("ﬁne").as_deref(), Ok("fine"));
        assert_eq!(p.lookup_key("ALICE").as_deref(), Ok("alice"));
        assert!(p.lookup_key("a b").is_err());
        assert!(p.lookup_key(&"x".repeat(500)).is_err());
    }
}
