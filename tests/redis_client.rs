//! The worker Redis client against real `redis-server` processes this test starts on free
//! ports: pipelining under concurrency, AUTH, fail-fast while Redis is down, and recovery when
//! it returns, without restarting anything.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fikra_gateway::cli::block_on;
use fikra_gateway::redis::{Frame, RedisClient, RedisError, RedisSettings, Reply};
use support::redis_server::RedisServer;
use support::wait::wait_until_async;

/// Every server here runs without persistence.
const NO_PERSISTENCE: [&str; 2] = ["--appendonly", "no"];

fn settings(port: u16, password: Option<&str>) -> RedisSettings {
    RedisSettings {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        password: password.map(str::to_string),
        connect_timeout: Duration::from_millis(200),
        command_timeout: Duration::from_millis(300),
    }
}

// Goal: 1,000 INCRs from 1,000 concurrent tasks share one pipelined connection and each gets
// its own reply: together exactly the values 1..=1000.
#[test]
fn concurrent_commands_are_pipelined_and_matched_in_order() {
    let server = RedisServer::start(&NO_PERSISTENCE);
    block_on(async {
        let client = Rc::new(RedisClient::new(settings(server.port, None)));
        assert_eq!(client.call(&[b"PING"]).await, Ok(Reply::SimpleString(b"PONG".to_vec())));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let client = client.clone();
                monoio::spawn(async move {
                    match client.call(&[b"INCR", b"counter"]).await {
                        Ok(Reply::Integer(value)) => value,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await);
        }
        values.sort();
        assert_eq!(values, (1..=1000).collect::<Vec<i64>>());
        let error = client.call(&[b"INCR", b"counter", b"extra"]).await;
        assert!(
            matches!(error, Err(RedisError::Server(ref m)) if m.contains("wrong number of arguments")),
            "{error:?}"
        );
    });
}

// Goal: AUTH is sent on connect; a wrong password is a server error, not a hang.
#[test]
fn authenticates() {
    let server = RedisServer::start(&["--appendonly", "no", "--requirepass", "s3cret"]);
    block_on(async {
        let good = RedisClient::new(settings(server.port, Some("s3cret")));
        assert_eq!(good.call(&[b"SET", b"k", b"v"]).await, Ok(Reply::SimpleString(b"OK".to_vec())));
        assert_eq!(good.call(&[b"GET", b"k"]).await, Ok(Reply::BulkString(b"v".to_vec())));
        let bad = RedisClient::new(settings(server.port, Some("wrong")));
        assert!(matches!(bad.call(&[b"PING"]).await, Err(RedisError::Server(_))));
    });
}

// Goal: with Redis down every command fails within the command timeout (no hang); when Redis
// returns on the same port the same client recovers by itself.
#[test]
fn fails_fast_while_down_and_recovers() {
    let mut server = RedisServer::start(&NO_PERSISTENCE);
    let port = server.port;
    block_on(async move {
        let client = RedisClient::new(settings(port, None));
        assert!(client.call(&[b"PING"]).await.is_ok());
        server.kill();
        for _ in 0..20 {
            let started = Instant::now();
            let result = client.call(&[b"PING"]).await;
            assert!(
                matches!(result, Err(RedisError::Unavailable | RedisError::Lost | RedisError::Timeout)),
                "{result:?}"
            );
            assert!(started.elapsed() < Duration::from_millis(600), "took {:?}", started.elapsed());
        }
        server.restart(&NO_PERSISTENCE);
        let recovered =
            wait_until_async(Duration::from_secs(5), || async { client.call(&[b"PING"]).await.is_ok() }).await;
        assert!(recovered, "did not recover");
        assert!(client.is_connected());
    });
}

/// A stand-in server on one connection that answers each command by its name: `SPLIT` one byte
/// per write, `NESTED` an array of arrays and nulls, `BAD` an error, `MOVED` a redirect, `BIG`
/// 100,000 bytes (several reads), anything else the bulk string of its first argument. The
/// replies to the commands of one read go out in one write (pipelined).
fn scripted_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut received, mut chunk) = (Vec::new(), [0u8; 4096]);
        loop {
            let read = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            received.extend_from_slice(&chunk[..read]);
            let mut replies = Vec::new();
            // Commands are RESP arrays of bulk strings: the client's reader reads them too.
            while let Ok(Some(len)) = fikra_gateway::redis::reply_len(&received) {
                let command: Vec<u8> = received.drain(..len).collect();
                let Some(Frame::Array(args)) = Frame::of_reply(&command) else { panic!("{command:?}") };
                let arg = |at: usize| match args.get(at) {
                    Some(Frame::BulkString(arg)) => arg.to_vec(),
                    other => panic!("{other:?}"),
                };
                match &arg(0)[..] {
                    b"SPLIT" => {
                        for byte in b"$11\r\nhello world\r\n" {
                            stream.write_all(&[*byte]).unwrap();
                            // Spread over many reads (the outcome is checked, not the timing).
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    b"NESTED" => replies.extend_from_slice(b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*-1\r\n"),
                    b"BAD" => replies.extend_from_slice(b"-ERR unknown command 'BAD'\r\n"),
                    b"MOVED" => replies.extend_from_slice(b"-MOVED 3999 127.0.0.1:7001\r\n"),
                    b"BIG" => {
                        replies.extend_from_slice(b"$100000\r\n");
                        replies.extend_from_slice(&[b'x'; 100_000]);
                        replies.extend_from_slice(b"\r\n");
                    }
                    _ => Reply::BulkString(arg(1)).encode(&mut replies),
                }
            }
            stream.write_all(&replies).unwrap();
        }
    });
    port
}

// Goal: replies are read where they arrived, exactly: one cut into a byte per read, one larger
// than a read, nested arrays with both nulls, error replies as `Server` errors with their text
// (a redirect too), and pipelined replies each to its own command, read in place
// (`call_with`) and as owned trees (`call`) alike.
#[test]
fn replies_are_read_in_place_whatever_their_shape_and_cut() {
    let port = scripted_server();
    block_on(async move {
        let client = Rc::new(RedisClient::new(settings(port, None)));
        let split = client.call_with(&[b"SPLIT"], |frame| frame == Frame::BulkString(b"hello world")).await;
        assert_eq!(split, Ok(true));
        let nested = client.call(&[b"NESTED"]).await;
        let expected = Reply::Array(vec![
            Reply::Integer(1),
            Reply::Array(vec![Reply::BulkString(b"a".to_vec()), Reply::Null]),
            Reply::Null,
        ]);
        assert_eq!(nested, Ok(expected));
        let big =
            client.call_with(&[b"BIG"], |frame| matches!(frame, Frame::BulkString(b) if b == [b'x'; 100_000])).await;
        assert_eq!(big, Ok(true));
        let bad = client.call_with(&[b"BAD"], |_| panic!("an error reply is not read")).await;
        assert_eq!(bad, Err::<(), _>(RedisError::Server("ERR unknown command 'BAD'".into())));
        assert_eq!(client.call(&[b"MOVED"]).await, Err(RedisError::Server("MOVED 3999 127.0.0.1:7001".into())));
        let tasks: Vec<_> = (0..50)
            .map(|n| {
                let client = client.clone();
                monoio::spawn(async move {
                    let id = format!("id{n}");
                    let args: [&[u8]; 2] = [b"ECHO", id.as_bytes()];
                    let echoed = client
                        .call_with(&args, |frame| match frame {
                            Frame::BulkString(echoed) => echoed.to_vec(),
                            other => panic!("{other:?}"),
                        })
                        .await;
                    (id, echoed)
                })
            })
            .collect();
        for task in tasks {
            let (id, echoed) = task.await;
            assert_eq!(echoed, Ok(id.into_bytes()));
        }
        assert!(client.is_connected(), "no reply put the connection out of step");
    });
}
