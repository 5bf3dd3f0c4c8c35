//! Fuzz harness: the exec channel as the guest init reads it (bytes from the host, which a
//! compromised VMM or a bug there controls), fed from arbitrary bytes. Compiled with the
//! cargo feature `fuzzing` (for the cargo-fuzz target `control` in `fuzz/`, through
//! `isol_vmm::fuzzing`) and for this crate's tests. Not part of the default API.

use crate::control::{Decoder, Frame, FrameError, HEADER_LEN, MAX_PAYLOAD, Request};

/// Feeds `data` to a [`Decoder`] in pieces whose sizes come from the input's first byte,
/// and parses each frame as the exec server does ([`Request::parse`]). Checks what the
/// decoder promises: it holds at most one frame's bytes; the frames it returns re-encode to
/// exactly the bytes they came from; it fails only on a length over [`MAX_PAYLOAD`], at
/// that frame's header, and a parsed start request encodes back to itself.
pub fn host_frames(data: &[u8]) {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    // 0: all at once; otherwise pieces of 1..=255 bytes, growing by `step` (so a frame's
    // header and payload arrive split in every way).
    let mut d = Decoder::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut piece = usize::from(step).max(1);
    let mut err = None;
    while fed < wire.len() {
        let n = if step == 0 {
            wire.len()
        } else {
            piece.min(wire.len() - fed)
        };
        piece = piece % 255 + usize::from(step);
        let r = d.push(&wire[fed..fed + n], &mut frames);
        fed += n;
        assert!(
            d.held() <= HEADER_LEN + MAX_PAYLOAD,
            "decoder holds {}",
            d.held()
        );
        if let Err(e) = r {
            err = Some(e);
            break;
        }
    }
    let consumed: usize = frames.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
    let reencoded: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    assert_eq!(reencoded[..], wire[..consumed], "frames do not round-trip");
    match err {
        Some(FrameError::TooLong(n)) => {
            // The header right after the last frame says so.
            let h = &wire[consumed..consumed + HEADER_LEN];
            assert_eq!(u32::from_le_bytes([h[5], h[6], h[7], h[8]]), n);
            assert!(n as usize > MAX_PAYLOAD);
        }
        Some(e) => panic!("the decoder failed with {e:?}"),
        None => assert_eq!(d.held(), wire.len() - consumed),
    }
    for f in frames {
        let kind = f.kind;
        match Request::parse(f) {
            Ok(Request::Start(r)) => {
                if let Ok(b) = r.encode() {
                    let back = crate::control::StartRequest::decode(&b);
                    assert_eq!(
                        back.as_ref(),
                        Ok(&*r),
                        "a start request does not round-trip"
                    );
                }
            }
            Ok(_) => {}
            Err(FrameError::BadKind(k)) => assert_eq!(k, kind),
            Err(FrameError::BadPayload(k)) => assert_eq!(k, kind),
            Err(FrameError::BadStart(m)) => assert!(!m.contains('\n'), "{m}"),
            Err(e) => panic!("parsing a frame of kind {kind} failed with {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::control::{KIND_ACK, KIND_CLOSE, KIND_RESIZE, KIND_SIGNAL, KIND_STDIN, KIND_STDOUT};

    use super::*;

    #[test]
    fn well_formed_and_broken_streams_hold_the_promises() {
        let mut wire = vec![3u8];
        for f in [
            Frame::new(1, KIND_STDIN, vec![7; 300]),
            Frame::new(1, KIND_SIGNAL, vec![9]),
            Frame::new(1, KIND_SIGNAL, vec![9, 9]),
            Frame::new(2, KIND_RESIZE, vec![24, 0, 80, 0]),
            Frame::new(2, KIND_ACK, vec![1, 2]),
            Frame::new(2, KIND_CLOSE, Vec::new()),
            Frame::new(2, KIND_STDOUT, Vec::new()),
            Frame::new(3, crate::control::KIND_START, vec![0, 0, 0, 0, 0, 1]),
        ] {
            wire.extend(f.encode());
        }
        host_frames(&wire);
        wire.extend([1, 0, 0, 0, KIND_STDIN, 0xff, 0xff, 0xff, 0xff, 1, 2]);
        host_frames(&wire);
        wire[0] = 0;
        host_frames(&wire);
        host_frames(&[]);
    }

    /// Every file of `fuzz/corpus/control/` whose first byte is even goes through this side
    /// (the VMM's crate replays the whole corpus through `isol_vmm::fuzzing::control`).
    #[test]
    fn replay_control_corpus_guest_side() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/control");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let b = std::fs::read(e.unwrap().path()).unwrap();
            if let Some((m, rest)) = b.split_first()
                && m % 2 == 0
            {
                host_frames(rest);
                n += 1;
            }
        }
        eprintln!("control (guest side): replayed {n} corpus files");
    }
}
