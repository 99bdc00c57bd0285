//! Join tokens: `DTCA-1-<base32 root digest>-<base32 secret>`.

use dtca_pki::token::JoinToken;

/// Parses the input as a token. One that parses re-serialises to exactly its (trimmed)
/// text, and parsing that again gives the same root and secret.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = text.parse::<JoinToken>() else {
        return;
    };
    let exposed = token.expose();
    assert_eq!(
        exposed,
        text.trim(),
        "a parsed token does not re-serialise to its own text"
    );
    let Ok(again) = exposed.parse::<JoinToken>() else {
        panic!("a re-serialised token does not parse: {exposed:?}");
    };
    assert_eq!(
        again.root, token.root,
        "the root digest changed on a round trip"
    );
    assert_eq!(
        again.secret_hash(),
        token.secret_hash(),
        "the secret changed on a round trip"
    );
}
