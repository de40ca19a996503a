//! The cost of classifying a statement, which the router pays on every query before it can
//! choose a server. Figures are per statement.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwsplit::classify::classify;

/// An ORM query carrying a ~200-byte comment that names the code that issued it.
fn orm_statement() -> String {
    let comment = "/* application:Storefront,controller:orders,action:index,\
                   framework:rails,db_host:db-primary.internal,job:OrderExportJob,\
                   line:/app/controllers/orders_controller.rb:42:in `index',\
                   request_id:9f0c2a7e-5b1d-4c3e-8f6a */";
    format!(
        "{comment} SELECT orders.* FROM orders WHERE orders.customer_id = 42 \
         ORDER BY orders.created_at DESC LIMIT 25"
    )
}

/// A multi-row INSERT of sysbench-shaped rows, about 10 KiB long.
fn bulk_insert() -> String {
    let mut sql = String::from("INSERT INTO sbtest1 (id, k, c, pad) VALUES ");
    let mut id = 0;
    while sql.len() < 10 * 1024 {
        if id > 0 {
            sql.push(',');
        }
        id += 1;
        sql.push_str(&format!(
            "({id}, {}, '{:011}-{:011}-{:011}-{:011}-{:011}', '{:011}-{:011}-{:011}')",
            id * 7 % 1000,
            id,
            id + 1,
            id + 2,
            id + 3,
            id + 4,
            id + 5,
            id + 6,
            id + 7
        ));
    }
    sql
}

fn benches(c: &mut Criterion) {
    let cases = [
        (
            "sysbench_point_select",
            "SELECT c FROM sbtest1 WHERE id=?".to_string(),
        ),
        (
            "sysbench_distinct_range",
            "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c".to_string(),
        ),
        ("orm_200B_comment", orm_statement()),
        ("insert_10KiB_values", bulk_insert()),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, sql) in &cases {
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_function(*name, |b| b.iter(|| classify(black_box(sql.as_bytes()))));
    }
    group.finish();
}

criterion_group!(classify_benches, benches);
criterion_main!(classify_benches);
