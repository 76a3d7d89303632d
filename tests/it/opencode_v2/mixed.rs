//! A `[[upstreams]]` set of one 1.18 and one 2.x server behind one gateway.

use super::*;

/// One gateway over a 1.18 and a 2.x upstream (`[[upstreams]]`): each is spoken to in its own
/// API, `/status` names both versions, new conversations go to both and each follow-up stays
/// on its conversation's upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_set_of_upstreams_works() {
    let mock = support::MockModel::start().await;
    let v1 = support::OpenCode::start(&mock.base_url()).await;
    let v2 =
        support::OpenCode::start_with(&mock.base_url(), support::OpenCodeOptions::v2("mixed-pw"))
            .await;
    let config = format!(
        "[[upstreams]]\nname = \"one\"\nurl = \"{}\"\n[[upstreams]]\nname = \"two\"\nurl = \"{}\"\npassword = \"mixed-pw\"\n",
        v1.url(),
        v2.url()
    );
    let opts = support::GatewayOptions {
        no_default_args: true,
        ..support::GatewayOptions::default()
    }
    .args(["--listen", "127.0.0.1:0"])
    .config(config);
    let gateway = support::Gateway::start_with("", opts).await;
    let http = support::gateway::test_client();
    let ready = support::eventually(Duration::from_secs(30), || async {
        let status: Value = http
            .get(format!("{}/status", gateway.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Both detected, and both taking work (breaker up, event stream connected): a new
        // conversation goes only to an upstream that is.
        status["upstreams"].as_array().is_some_and(|u| {
            u.iter().all(|u| {
                !u["opencode"]["api"].is_null()
                    && u["state"] == "up"
                    && u["events_connected"] == true
            })
        })
    })
    .await;
    let status: Value = http
        .get(format!("{}/status", gateway.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready, "{status}");
    let versions: Vec<(String, String)> = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["opencode"]["api"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("one".to_string(), "1.x".to_string()),
            ("two".to_string(), "2.x".to_string())
        ]
    );

    let chat = |messages: Value| {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", gateway.url());
        async move {
            let resp = http
                .post(url)
                .json(&json!({"model": ECHO, "messages": messages}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // Several conversations at once, so that both upstreams take some.
    let firsts: Vec<String> = (0..6)
        .map(|i| unique(&format!("mixed {i} [slow:300]")))
        .collect();
    let answers = futures::future::join_all(
        firsts
            .iter()
            .map(|q| chat(json!([{"role": "user", "content": q}]))),
    )
    .await;
    let on_v1 = v1.sessions().await.len();
    let on_v2 = v2.sessions().await.len();
    assert!(
        on_v1 > 0 && on_v2 > 0,
        "both upstreams took conversations: {on_v1} on 1.x, {on_v2} on 2.x"
    );
    for (q, a) in firsts.iter().zip(&answers) {
        assert_eq!(a, &format!("echo: {q}"));
        let follow = unique("and then");
        let answer = chat(json!([
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
            {"role": "user", "content": follow}
        ]))
        .await;
        assert_eq!(answer, format!("echo: {follow}"));
    }
    assert_eq!(
        (v1.sessions().await.len(), v2.sessions().await.len()),
        (on_v1, on_v2),
        "every follow-up continued its conversation's session"
    );
}
