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
use fikra_gateway::redis::{RedisClient, RedisError, RedisSettings, Reply};
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
