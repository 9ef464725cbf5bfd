//! The connection handshake: both ends prove they know the cluster secret without sending it
//! (HMAC-SHA256 challenge-response over fresh nonces from each side), and agree which ranks and
//! which cluster shape the connection is for. With encryption on, each direction's
//! ChaCha20-Poly1305 key is derived from the secret and both nonces, so keys differ per
//! connection and per direction.
//!
//! ```text
//! connector -> listener  HELLO     magic, version, from, to, world, flags, nonce_c
//! listener  -> connector CHALLENGE magic, status, nonce_l, mac("listener" ...)
//! connector -> listener  RESPONSE  mac("connector" ...)
//! listener  -> connector VERDICT   status
//! ```
//! A listener checks the connector's MAC before anything else is read from it, so a host
//! without the secret never gets a frame through.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};

type HmacSha256 = Hmac<Sha256>;

const HELLO_MAGIC: &[u8; 4] = b"TSRH";
const CHALLENGE_MAGIC: &[u8; 4] = b"TSRC";
const VERSION: u32 = 1;
pub(crate) const FLAG_ENCRYPT: u32 = 1;
/// The flags word's upper 16 bits carry the connection's index among the pair's connections.
const INDEX_SHIFT: u32 = 16;

/// Why a handshake failed, to be logged or reported with the peer's address.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Refused(m) => f.write_str(m),
        }
    }
}

/// What both sides agreed on.
pub(crate) struct Session {
    /// The rank at the other end.
    pub peer: usize,
    /// Keys for frames this side sends and receives (only with encryption).
    pub keys: Option<([u8; 32], [u8; 32])>,
    /// Which of the pair's parallel connections this is.
    pub index: usize,
}

pub(crate) fn nonce() -> std::io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(n)
}

struct Transcript {
    from: u32,
    to: u32,
    world: u32,
    flags: u32,
    nonce_c: [u8; 32],
    nonce_l: [u8; 32],
}

impl Transcript {
    fn mac(&self, secret: &[u8], label: &[u8]) -> HmacSha256 {
        let mut m = match HmacSha256::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        m.update(label);
        m.update(&self.from.to_le_bytes());
        m.update(&self.to.to_le_bytes());
        m.update(&self.world.to_le_bytes());
        m.update(&self.flags.to_le_bytes());
        m.update(&self.nonce_c);
        m.update(&self.nonce_l);
        m
    }

    fn tag(&self, secret: &[u8], label: &[u8]) -> [u8; 32] {
        self.mac(secret, label).finalize().into_bytes().into()
    }

    fn verify(&self, secret: &[u8], label: &[u8], tag: &[u8]) -> bool {
        self.mac(secret, label).verify_slice(tag).is_ok()
    }

    fn keys(&self, secret: &[u8], connector: bool) -> ([u8; 32], [u8; 32]) {
        let c2l = self.tag(secret, b"tessera key connector->listener");
        let l2c = self.tag(secret, b"tessera key listener->connector");
        if connector { (c2l, l2c) } else { (l2c, c2l) }
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-size-key MACs; HMAC takes any key length.
    panic!("HMAC rejected a key")
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The connector's side: we are rank `me` dialling rank `to`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect<S: Read + Write>(
    s: &mut S,
    secret: &[u8],
    me: usize,
    to: usize,
    world: usize,
    encrypt: bool,
    index: usize,
) -> Result<Session, HandshakeError> {
    let flags = if encrypt { FLAG_ENCRYPT } else { 0 } | ((index as u32) << INDEX_SHIFT);
    let nonce_c = nonce()?;
    let mut hello = Vec::with_capacity(56);
    hello.extend_from_slice(HELLO_MAGIC);
    for v in [VERSION, me as u32, to as u32, world as u32, flags] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    hello.extend_from_slice(&nonce_c);
    s.write_all(&hello)?;

    let mut ch = [0u8; 4 + 4 + 32 + 32];
    s.read_exact(&mut ch)?;
    if &ch[..4] != CHALLENGE_MAGIC {
        return Err(HandshakeError::Refused(
            "the listener is not a tessera rank (bad handshake magic)".into(),
        ));
    }
    let status = read_u32(&ch[4..8]);
    if status != 0 {
        return Err(HandshakeError::Refused(refusal(status).into()));
    }
    let mut nonce_l = [0u8; 32];
    nonce_l.copy_from_slice(&ch[8..40]);
    let t = Transcript {
        from: me as u32,
        to: to as u32,
        world: world as u32,
        flags,
        nonce_c,
        nonce_l,
    };
    // Answer first (a MAC over fresh nonces reveals nothing), so a listener with another secret
    // can log the refusal; then check the listener's proof.
    s.write_all(&t.tag(secret, b"tessera connector"))?;
    if !t.verify(secret, b"tessera listener", &ch[40..72]) {
        return Err(HandshakeError::Refused(
            "the listener does not know the cluster secret".into(),
        ));
    }
    let mut verdict = [0u8; 4];
    s.read_exact(&mut verdict)?;
    match read_u32(&verdict) {
        0 => Ok(Session {
            peer: to,
            keys: encrypt.then(|| t.keys(secret, true)),
            index,
        }),
        code => Err(HandshakeError::Refused(refusal(code).into())),
    }
}

fn refusal(code: u32) -> &'static str {
    match code {
        1 => "refused: the cluster secret does not match",
        2 => "refused: the ranks disagree on the world size or on who is who",
        3 => "refused: the ranks disagree on encryption (set TESSERA_ENCRYPT the same everywhere)",
        4 => "refused: protocol version mismatch (run the same tessera version on every host)",
        _ => "refused by the listener",
    }
}

/// The listener's side: we are rank `me`; `expect(from, index)` says whether connection `index`
/// from rank `from` is wanted now (each higher rank connects once per index).
pub(crate) fn accept<S: Read + Write>(
    s: &mut S,
    secret: &[u8],
    me: usize,
    world: usize,
    encrypt: bool,
    expect: impl Fn(usize, usize) -> bool,
) -> Result<Session, HandshakeError> {
    let mut hello = [0u8; 56];
    s.read_exact(&mut hello)?;
    let refuse = |s: &mut S, code: u32, msg: String| -> Result<Session, HandshakeError> {
        let mut ch = [0u8; 72];
        ch[..4].copy_from_slice(CHALLENGE_MAGIC);
        ch[4..8].copy_from_slice(&code.to_le_bytes());
        let _ = s.write_all(&ch);
        Err(HandshakeError::Refused(msg))
    };
    if &hello[..4] != HELLO_MAGIC {
        return Err(HandshakeError::Refused(
            "not a tessera rank (bad handshake magic)".into(),
        ));
    }
    let (version, from, to, w, flags) = (
        read_u32(&hello[4..]),
        read_u32(&hello[8..]) as usize,
        read_u32(&hello[12..]) as usize,
        read_u32(&hello[16..]) as usize,
        read_u32(&hello[20..]),
    );
    if version != VERSION {
        return refuse(
            s,
            4,
            format!("protocol version {version}, expected {VERSION}"),
        );
    }
    let index = (flags >> INDEX_SHIFT) as usize;
    if w != world || to != me || from >= world || !expect(from, index) {
        return refuse(
            s,
            2,
            format!(
                "claims to be rank {from} of {w} dialling rank {to} (connection {index}); this is rank {me} of {world}"
            ),
        );
    }
    if (flags & FLAG_ENCRYPT != 0) != encrypt {
        return refuse(s, 3, "encryption setting differs".into());
    }
    let mut nonce_c = [0u8; 32];
    nonce_c.copy_from_slice(&hello[24..56]);
    let t = Transcript {
        from: from as u32,
        to: me as u32,
        world: world as u32,
        flags,
        nonce_c,
        nonce_l: nonce()?,
    };
    let mut ch = Vec::with_capacity(72);
    ch.extend_from_slice(CHALLENGE_MAGIC);
    ch.extend_from_slice(&0u32.to_le_bytes());
    ch.extend_from_slice(&t.nonce_l);
    ch.extend_from_slice(&t.tag(secret, b"tessera listener"));
    s.write_all(&ch)?;
    let mut resp = [0u8; 32];
    s.read_exact(&mut resp)?;
    if !t.verify(secret, b"tessera connector", &resp) {
        let _ = s.write_all(&1u32.to_le_bytes());
        return Err(HandshakeError::Refused(format!(
            "claimed rank {from} but does not know the cluster secret"
        )));
    }
    s.write_all(&0u32.to_le_bytes())?;
    Ok(Session {
        peer: from,
        keys: encrypt.then(|| t.keys(secret, false)),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair(
        secret_c: &'static [u8],
        secret_l: &'static [u8],
    ) -> (
        Result<Session, HandshakeError>,
        Result<Session, HandshakeError>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            accept(&mut s, secret_l, 0, 2, true, |r, i| r == 1 && i == 0)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let rc = connect(&mut c, secret_c, 1, 0, 2, true, 0);
        (rc, h.join().unwrap())
    }

    #[test]
    fn same_secret_agrees_on_keys() {
        let (c, l) = pair(b"correct horse", b"correct horse");
        let (c, l) = (c.unwrap(), l.unwrap());
        assert_eq!((c.peer, l.peer), (0, 1));
        let (cs, cr) = c.keys.unwrap();
        let (ls, lr) = l.keys.unwrap();
        assert_eq!((cs, cr), (lr, ls));
        assert_ne!(cs, cr);
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (c, l) = pair(b"intruder secret", b"correct horse");
        assert!(matches!(c, Err(HandshakeError::Refused(_))));
        match l {
            Err(e) => assert!(
                e.to_string().contains("does not know the cluster secret"),
                "{e}"
            ),
            Ok(_) => panic!("a wrong secret was accepted"),
        }
    }
}
