//! The cost of classifying a statement, which the router pays on every query before it can
//! choose a server. Figures are per statement; the target for sysbench's statements is
//! 150 ns each.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwsplit::classify::classify;

/// Every statement sysbench's OLTP tests send, as they arrive with prepared statements off
/// (values inlined; `c` and `pad` are 120- and 60-character strings).
fn sysbench_statements() -> Vec<(&'static str, String)> {
    let c = "68487932199-96439406143-93774651418-41631865787-96406072701-\
             20604855487-25459966574-28203206787-41238978918-19503783441";
    let pad = "22195207048-70116052123-74140395089-76317954521-98694025897";
    vec![
        ("point_select", "SELECT c FROM sbtest1 WHERE id=5012".into()),
        (
            "simple_range",
            "SELECT c FROM sbtest1 WHERE id BETWEEN 4987 AND 5086".into(),
        ),
        (
            "sum_range",
            "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 4987 AND 5086".into(),
        ),
        (
            "order_range",
            "SELECT c FROM sbtest1 WHERE id BETWEEN 4987 AND 5086 ORDER BY c".into(),
        ),
        (
            "distinct_range",
            "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 4987 AND 5086 ORDER BY c".into(),
        ),
        (
            "index_update",
            "UPDATE sbtest1 SET k=k+1 WHERE id=5012".into(),
        ),
        (
            "non_index_update",
            format!("UPDATE sbtest1 SET c='{c}' WHERE id=5012"),
        ),
        ("delete", "DELETE FROM sbtest1 WHERE id=5012".into()),
        (
            "insert",
            format!("INSERT INTO sbtest1 (id, k, c, pad) VALUES (5012, 4993, '{c}', '{pad}')"),
        ),
        ("begin", "BEGIN".into()),
        ("commit", "COMMIT".into()),
        // What the prepared-statement mode sends to COM_STMT_PREPARE.
        (
            "point_select_prepared",
            "SELECT c FROM sbtest1 WHERE id=?".into(),
        ),
    ]
}

/// ORM queries carrying a comment that names the code that issued it (sqlcommenter, Rails'
/// query log tags), about 200 bytes, before and after the statement.
fn orm_statements() -> Vec<(&'static str, String)> {
    let comment = "/* application:Storefront,controller:orders,action:index,\
                   framework:rails,db_host:db-primary.internal,job:OrderExportJob,\
                   line:/app/controllers/orders_controller.rb:42:in `index',\
                   request_id:9f0c2a7e-5b1d-4c3e-8f6a */";
    let select = "SELECT `orders`.`id`, `orders`.`customer_id`, `orders`.`state`, \
                  `orders`.`created_at` FROM `orders` WHERE `orders`.`customer_id` = 42 \
                  AND `orders`.`state` IN ('paid', 'shipped') \
                  ORDER BY `orders`.`created_at` DESC LIMIT 25";
    vec![
        ("comment_first_200B", format!("{comment} {select}")),
        ("comment_last_200B", format!("{select} {comment}")),
        (
            "hint_comment",
            format!("/* rwsplit:replica */ {select} {comment}"),
        ),
    ]
}

/// Statements of about 10 KiB: a multi-row INSERT of sysbench-shaped rows, and a SELECT with
/// a long IN list.
fn large_statements() -> Vec<(&'static str, String)> {
    let mut insert = String::from("INSERT INTO sbtest1 (id, k, c, pad) VALUES ");
    let mut id = 0;
    while insert.len() < 10 * 1024 {
        if id > 0 {
            insert.push(',');
        }
        id += 1;
        insert.push_str(&format!(
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
    let mut select = String::from("SELECT id, k, c FROM sbtest1 WHERE id IN (");
    let mut id = 0;
    while select.len() < 10 * 1024 {
        if id > 0 {
            select.push_str(", ");
        }
        id += 1;
        select.push_str(&(id * 7919 % 100_000).to_string());
    }
    select.push(')');
    vec![("insert_10KiB", insert), ("select_in_list_10KiB", select)]
}

fn benches(c: &mut Criterion) {
    let corpora = [
        ("classify_sysbench", sysbench_statements()),
        ("classify_orm", orm_statements()),
        ("classify_10KiB", large_statements()),
    ];
    for (group_name, statements) in &corpora {
        let mut group = c.benchmark_group(*group_name);
        for (name, sql) in statements {
            group.throughput(Throughput::Bytes(sql.len() as u64));
            group.bench_function(*name, |b| b.iter(|| classify(black_box(sql.as_bytes()))));
        }
        group.finish();
    }
}

criterion_group!(classify_benches, benches);
criterion_main!(classify_benches);
