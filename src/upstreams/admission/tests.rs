use super::*;

fn config(limit: usize, queue: usize, wait_ms: u64, adaptive: bool) -> AdmissionConfig {
    AdmissionConfig {
        adaptive,
        initial_limit: limit,
        min_limit: 1,
        max_limit: 64,
        queue,
        queue_timeout: Duration::from_millis(wait_ms),
        ..AdmissionConfig::default()
    }
}

#[tokio::test]
async fn below_the_limit_at_once_then_first_come_first_served() {
    let a = Admission::new(&config(2, 4, 5_000, false));
    // (Two may wait: the queue is never longer than the limit.)
    let one = a.admit().await.unwrap();
    let _two = a.admit().await.unwrap();
    let (x, y) = (a.clone(), a.clone());
    let third = tokio::spawn(async move { x.admit().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fourth = tokio::spawn(async move { y.admit().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.snapshot().queued, 2);
    drop(one);
    let _third = third.await.unwrap().unwrap();
    assert!(_third.is_some(), "the first in the queue goes first");
    assert_eq!(a.snapshot().queued, 1);
    assert!(!fourth.is_finished());
    assert_eq!(a.snapshot().in_flight, 2);
    fourth.abort();
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_a_long_wait_is_refused() {
    let a = Admission::new(&config(1, 1, 100, false));
    let _held = a.admit().await.unwrap();
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.admit().await.map(|p| p.is_some()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    assert_eq!(
        a.admit().await.map(|p| p.is_some()),
        Err(Refusal::QueueFull)
    );
    assert!(started.elapsed() < Duration::from_millis(20));
    assert_eq!(waiting.await.unwrap(), Err(Refusal::QueueTimeout));
    let s = a.snapshot();
    assert_eq!(
        (s.in_flight, s.queued, s.refused, s.admitted),
        (1, 0, 2, 1),
        "{s:?}"
    );
}

#[tokio::test]
async fn every_place_comes_back() {
    let a = Admission::new(&config(3, 50, 5, false));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                if let Ok(p) = a.admit().await {
                    tokio::time::sleep(Duration::from_millis(i % 7)).await;
                    drop(p);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = a.snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0), "{s:?}");
    assert_eq!(s.admitted + s.refused, 200);
}

#[tokio::test]
async fn the_limit_follows_latency() {
    let a = Admission::new(&config(4, 100, 5_000, true));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(a.admit().await.unwrap());
    }
    // A burst (one generation: as many as the limit) waits while OpenCode answers as fast as
    // ever: the limit grows to let it in.
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut samples = 0;
    while a.snapshot().queued > 0 {
        a.sample(Duration::from_millis(10));
        samples += 1;
        assert!(samples < 100, "the limit did not grow: {:?}", a.snapshot());
        tokio::task::yield_now().await;
    }
    for t in burst {
        held.push(t.await.unwrap().unwrap());
    }
    let grown = a.snapshot().limit;
    assert!(grown >= 7, "{grown}");
    // OpenCode slows down ten-fold: the limit shrinks (until that becomes the new normal).
    for _ in 0..20 {
        a.sample(Duration::from_millis(100));
    }
    let shrunk = a.snapshot().limit;
    // (Towards L = gradient·L + √L: about 4 at the steepest gradient.)
    assert!(shrunk < grown && shrunk <= 5, "{grown} → {shrunk}");
    assert!(a.snapshot().latency_ms.is_some_and(|l| l > 50.0));
}

#[tokio::test]
async fn off_admits_everything() {
    let a = Admission::new(&AdmissionConfig {
        enabled: false,
        ..AdmissionConfig::default()
    });
    for _ in 0..10_000 {
        assert!(a.admit().await.unwrap().is_none());
    }
    assert_eq!(a.snapshot().limit, 0);
}

#[tokio::test]
async fn retry_after_grows_with_the_refusals_per_admission() {
    let a = Admission::new(&config(1, 0, 1, false));
    assert_eq!(a.retry_after(), Duration::from_secs(1));
    let held = a.admit().await.unwrap();
    for _ in 0..100 {
        assert_eq!(
            a.admit().await.map(|p| p.is_some()),
            Err(Refusal::QueueFull)
        );
    }
    drop(held);
    tokio::time::sleep(RATE_WINDOW).await;
    // 100 refused for 1 admitted: √100 = 10 s.
    assert_eq!(a.retry_after(), Duration::from_secs(10));
    for _ in 0..100 {
        let _ = a.admit().await;
    }
    tokio::time::sleep(RATE_WINDOW).await;
    assert_eq!(
        a.retry_after(),
        Duration::from_secs(1),
        "all admitted again"
    );
}

#[tokio::test]
async fn an_overloaded_upstream_refuses_at_once() {
    let a = Admission::new(&config(2, 10, 5_000, true));
    let mut held = vec![a.admit().await.unwrap(), a.admit().await.unwrap()];
    a.sample(Duration::from_millis(10));
    while (a.snapshot().in_flight as f64) < 3.0 {
        held.push(a.admit().await.unwrap());
    }
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.admit().await.map(|p| p.is_some()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.snapshot().queued, 1);
    a.sample(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(
        waiting.await.unwrap(),
        Err(Refusal::Overloaded),
        "the waiter is refused"
    );
    assert_eq!(
        a.admit().await.map(|p| p.is_some()),
        Err(Refusal::Overloaded)
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    // Fast again: a burst may wait again.
    for _ in 0..50 {
        a.sample(Duration::from_millis(10));
    }
    assert!(a.snapshot().latency_ms.is_some_and(|l| l < 20.0));
}

#[tokio::test]
async fn no_more_than_the_limit_waits() {
    let a = Admission::new(&config(2, 100, 5_000, false));
    let _held = (a.admit().await.unwrap(), a.admit().await.unwrap());
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|p| p.is_some()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.snapshot().queued, 2);
    let started = Instant::now();
    assert_eq!(
        a.admit().await.map(|p| p.is_some()),
        Err(Refusal::QueueFull)
    );
    assert!(started.elapsed() < Duration::from_millis(20));
    for w in waiters {
        w.abort();
    }
}
