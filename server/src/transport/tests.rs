use super::inbound::SnapshotReceiver;
use super::*;

/// Only there so a broken test fails instead of hanging; nothing asserts on time.
const WAIT: Duration = Duration::from_secs(30);

fn config(node_id: u64, secret: &[u8], dir: &Path, listen: SocketAddr) -> TransportConfig {
    let dir = dir.to_path_buf();
    TransportConfig {
        node_id,
        listen,
        secret: secret.to_vec(),
        snapshot_dir: Arc::new(move |group| dir.join(format!("group-{group}"))),
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn node(node_id: u64, secret: &[u8], dir: &Path) -> (Transport, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(1024);
    let transport = Transport::start(config(node_id, secret, dir, any_port()), tx)
        .await
        .expect("bind");
    (transport, rx)
}

fn append(from: u64, to: u64, index: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    m.index = index;
    m
}

fn snapshot_msg(from: u64, to: u64, name: &str) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = to;
    m.mut_snapshot()
        .set_data(Bytes::copy_from_slice(name.as_bytes()));
    m.mut_snapshot().mut_metadata().index = 42;
    m
}

async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for inbound")
        .expect("inbound channel closed")
}

/// The next Raft message, skipping transport reports.
async fn next_raft(rx: &mut mpsc::Receiver<Inbound>) -> (u64, Message) {
    loop {
        if let Inbound::Raft { group, msg } = next(rx).await {
            return (group, msg);
        }
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("timed out waiting for condition");
}

fn assert_no_raft(rx: &mut mpsc::Receiver<Inbound>) {
    while let Ok(inbound) = rx.try_recv() {
        assert!(
            !matches!(inbound, Inbound::Raft { .. }),
            "unexpected delivery: {inbound:?}"
        );
    }
}

#[tokio::test]
async fn messages_flow_both_ways_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut a_rx) = node(1, b"secret", dir.path()).await;
    let (b, mut b_rx) = node(2, b"secret", dir.path()).await;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    const N: u64 = 500;
    for i in 0..N {
        a.send(7, append(1, 2, i));
        b.send(8, append(2, 1, i));
    }
    for i in 0..N {
        let (group, msg) = next_raft(&mut b_rx).await;
        assert_eq!((group, msg.from, msg.to, msg.index), (7, 1, 2, i));
        let (group, msg) = next_raft(&mut a_rx).await;
        assert_eq!((group, msg.from, msg.to, msg.index), (8, 2, 1, i));
    }
    assert_eq!(a.stats().sent, N);
    assert_eq!(b.stats().dropped, 0);
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn wrong_secret_is_refused_and_nothing_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut a_rx) = node(1, b"right", dir.path()).await;
    let (b, mut b_rx) = node(2, b"wrong", dir.path()).await;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    for i in 0..10 {
        a.send(1, append(1, 2, i));
        b.send(1, append(2, 1, i));
    }
    // Each side refuses the other's connection and reports it unreachable.
    wait_until(|| a.stats().rejected >= 1 && b.stats().rejected >= 1).await;
    for rx in [&mut a_rx, &mut b_rx] {
        match next(rx).await {
            Inbound::Unreachable { .. } => {}
            other => panic!("unexpected delivery: {other:?}"),
        }
    }

    // A hand-made connector: a bad proof followed by a Raft frame.
    let mut raw = TcpStream::connect(a.local_addr()).await.unwrap();
    let mut buf = BytesMut::new();
    let PeerFrame::Challenge { .. } = read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
        .await
        .unwrap()
    else {
        panic!("expected a challenge");
    };
    let mut out = BytesMut::new();
    let hello = PeerFrame::Hello {
        node_id: 9,
        nonce: [0; 32],
        proof: [0; 32],
    };
    peer::encode(&hello, &mut out).unwrap();
    let message = Bytes::from(append(9, 1, 1).write_to_bytes().unwrap());
    peer::encode(
        &PeerFrame::Raft {
            group: 1,
            message: message.clone(),
        },
        &mut out,
    )
    .unwrap();
    raw.write_all(&out).await.unwrap();
    // Closed without a Welcome.
    assert!(matches!(
        read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES).await,
        Err(TransportError::Closed | TransportError::Io(_))
    ));

    // And one that skips the handshake altogether.
    let mut raw = TcpStream::connect(a.local_addr()).await.unwrap();
    let mut out = BytesMut::new();
    peer::encode(&PeerFrame::Raft { group: 1, message }, &mut out).unwrap();
    raw.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let _challenge = read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
        .await
        .unwrap();
    assert!(read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
        .await
        .is_err());

    wait_until(|| a.stats().rejected >= 3).await;
    assert_no_raft(&mut a_rx);
    assert_no_raft(&mut b_rx);
    assert_eq!(a.stats().sent, 0);
    assert_eq!(b.stats().sent, 0);
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn restarted_peer_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut a_rx) = node(1, b"secret", dir.path()).await;
    let (b, mut b_rx) = node(2, b"secret", dir.path()).await;
    let b_addr = b.local_addr();
    a.set_peer(2, b_addr);
    a.send(1, append(1, 2, 1));
    assert_eq!(next_raft(&mut b_rx).await.1.index, 1);

    b.shutdown();
    drop(b_rx);
    match next(&mut a_rx).await {
        Inbound::Unreachable { peer } => assert_eq!(peer, 2),
        other => panic!("unexpected: {other:?}"),
    }
    // Sends while the peer is down are dropped, never blocked on.
    for i in 0..10 {
        a.send(1, append(1, 2, 100 + i));
    }

    // Same port again; the old listener goes away asynchronously after shutdown.
    let (tx, mut b_rx) = mpsc::channel(1024);
    let b = tokio::time::timeout(WAIT, async {
        loop {
            match Transport::start(config(2, b"secret", dir.path(), b_addr), tx.clone()).await {
                Ok(t) => break t,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("rebind");
    drop(tx);

    // Keep sending until one gets through; anything queued in between may be lost.
    let received = tokio::time::timeout(WAIT, async {
        let mut i = 1000;
        loop {
            a.send(1, append(1, 2, i));
            i += 1;
            if let Ok(Some(Inbound::Raft { msg, .. })) =
                tokio::time::timeout(Duration::from_millis(100), b_rx.recv()).await
            {
                break msg;
            }
        }
    })
    .await
    .expect("messages flow again");
    // Sent after the restart (or queued during the backoff), never the first one.
    assert!(received.index >= 100);
    assert!(a.stats().reconnects >= 1);
    a.shutdown();
    b.shutdown();
}

fn snapshot_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn snapshot_file_is_streamed_before_its_message() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, mut a_rx) = node(1, b"secret", a_dir.path()).await;
    let (b, mut b_rx) = node(2, b"secret", b_dir.path()).await;
    a.set_peer(2, b.local_addr());

    let contents = snapshot_bytes(3 * 1024 * 1024);
    let src_dir = a_dir.path().join("group-7");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::write(src_dir.join("snap-7-42"), &contents).unwrap();

    a.send(7, append(1, 2, 1));
    a.send(7, snapshot_msg(1, 2, "snap-7-42"));
    a.send(7, append(1, 2, 3));

    assert_eq!(next_raft(&mut b_rx).await.1.index, 1);
    let (group, msg) = next_raft(&mut b_rx).await;
    assert_eq!(group, 7);
    assert_eq!(msg.get_msg_type(), MessageType::MsgSnapshot);
    assert_eq!(msg.get_snapshot().get_data(), b"snap-7-42");
    assert_eq!(msg.get_snapshot().get_metadata().index, 42);
    // The file is complete by the time the message is delivered.
    let dst_dir = b_dir.path().join("group-7");
    let received = std::fs::read(dst_dir.join("snap-7-42")).unwrap();
    assert!(received == contents, "snapshot differs");
    assert!(!dst_dir.join("snap-7-42.part").exists());
    assert_eq!(next_raft(&mut b_rx).await.1.index, 3);

    match next(&mut a_rx).await {
        Inbound::SnapshotSent { group, to, ok } => assert_eq!((group, to, ok), (7, 2, true)),
        other => panic!("unexpected: {other:?}"),
    }

    // A missing file: reported failed and the message is not sent.
    a.send(7, snapshot_msg(1, 2, "snap-missing"));
    a.send(7, snapshot_msg(1, 2, "../escape"));
    a.send(7, append(1, 2, 4));
    for _ in 0..2 {
        match next(&mut a_rx).await {
            Inbound::SnapshotSent { group, to, ok } => {
                assert_eq!((group, to, ok), (7, 2, false))
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    let (_, msg) = next_raft(&mut b_rx).await;
    assert_eq!((msg.get_msg_type(), msg.index), (MessageType::MsgAppend, 4));
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn snapshot_receiver_checks_names_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut rx = SnapshotReceiver::new(Arc::new(move |group| root.join(group.to_string())));
    rx.chunk(1, "../evil", 0, b"x", true).await;
    assert!(!dir.path().join("evil").exists());
    assert!(!dir.path().join("1").exists());

    rx.chunk(1, "s", 0, b"abc", false).await;
    rx.chunk(1, "s", 5, b"zz", false).await; // gap: discarded
    rx.chunk(1, "s", 3, b"def", true).await;
    let group_dir = dir.path().join("1");
    assert_eq!(std::fs::read(group_dir.join("s")).unwrap(), b"abcdef");
    assert!(!group_dir.join("s.part").exists());

    // Empty file in one chunk.
    rx.chunk(1, "empty", 0, b"", true).await;
    assert_eq!(std::fs::read(group_dir.join("empty")).unwrap(), b"");
}

#[tokio::test]
async fn full_queue_drops_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_rx) = node(1, b"secret", dir.path()).await;
    // Accepts TCP connections (kernel backlog) but never speaks: the writer stays
    // stuck in its handshake and the queue cannot drain.
    let silent = TcpListener::bind(any_port()).await.unwrap();
    a.set_peer(2, silent.local_addr().unwrap());
    const EXTRA: usize = 100;
    for i in 0..(PEER_QUEUE_LEN + EXTRA) as u64 {
        a.send(1, append(1, 2, i));
    }
    assert!(a.stats().dropped >= EXTRA as u64);
    // Unknown peers are dropped too.
    let before = a.stats().dropped;
    a.send(1, append(1, 3, 0));
    assert_eq!(a.stats().dropped, before + 1);
    a.shutdown();
}
