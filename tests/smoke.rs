mod support;

use support::*;

#[tokio::test]
async fn select_through_proxy() {
    let cluster = shared_cluster("127.0.21");
    let addr = start_proxy(proxy_config(cluster, "")).await;
    let mut conn = mysql_async::Conn::new(app_opts(addr, None)).await.unwrap();
    let id: u32 = query_one(&mut conn, "SELECT @@server_id").await;
    assert_eq!(id, 1);
}
