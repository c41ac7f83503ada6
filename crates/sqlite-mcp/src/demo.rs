//! A small, deterministic sample shop database for demos and tests.
//!
//! Five related tables with foreign keys (categories, products, customers, orders,
//! order_items), a view and a few indexes; about six thousand rows made by a seeded generator,
//! so every run produces the same data.

use std::path::Path;

use rusqlite::{Connection, params};

/// Categories in the demo database.
pub const DEMO_CATEGORIES: usize = 8;
/// Products in the demo database.
pub const DEMO_PRODUCTS: usize = 120;
/// Customers in the demo database.
pub const DEMO_CUSTOMERS: usize = 500;
/// Orders in the demo database.
pub const DEMO_ORDERS: usize = 1_500;

const SCHEMA: &str = "
CREATE TABLE categories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT
);
CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    category_id INTEGER NOT NULL REFERENCES categories(id),
    name        TEXT NOT NULL,
    price       REAL NOT NULL CHECK (price > 0),
    stock       INTEGER NOT NULL DEFAULT 0,
    discontinued INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    city        TEXT,
    joined_on   TEXT NOT NULL
);
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    ordered_on  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'delivered', 'cancelled')),
    note        TEXT
);
CREATE TABLE order_items (
    order_id    INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    product_id  INTEGER NOT NULL REFERENCES products(id),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    unit_price  REAL NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE INDEX products_by_category ON products(category_id);
CREATE VIEW order_totals AS
    SELECT o.id AS order_id, o.customer_id, o.ordered_on, o.status,
           round(sum(i.quantity * i.unit_price), 2) AS total
    FROM orders o JOIN order_items i ON i.order_id = o.id
    GROUP BY o.id;
";

const CATEGORIES: [(&str, &str); DEMO_CATEGORIES] = [
    ("Coffee", "Beans and ground coffee"),
    ("Tea", "Loose leaf and bagged tea"),
    ("Kitchen", "Tools for the kitchen"),
    ("Books", "Cookbooks and guides"),
    ("Garden", "Seeds, pots and tools"),
    ("Stationery", "Paper, pens and notebooks"),
    ("Games", "Board and card games"),
    ("Outdoor", "Camping and hiking gear"),
];
const ADJECTIVES: [&str; 12] = [
    "Classic", "Deluxe", "Compact", "Organic", "Vintage", "Smart", "Rustic", "Premium", "Mini",
    "Travel", "Family", "Eco",
];
const NOUNS: [[&str; 3]; DEMO_CATEGORIES] = [
    ["Espresso Roast", "Filter Blend", "Cold Brew"],
    ["Green Tea", "Earl Grey", "Chai"],
    ["Knife", "Skillet", "Grater"],
    ["Baking Book", "Travel Guide", "Field Manual"],
    ["Planter", "Seed Kit", "Trowel"],
    ["Notebook", "Fountain Pen", "Planner"],
    ["Puzzle", "Card Game", "Strategy Game"],
    ["Tent", "Lantern", "Backpack"],
];
const FIRST: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Liam", "Maya", "Noor", "Oscar", "Priya",
];
const LAST: [&str; 16] = [
    "Ahmed", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hughes", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel",
];
const CITIES: [&str; 10] = [
    "Lisbon", "Berlin", "Lagos", "Osaka", "Austin", "Lyon", "Pune", "Oslo", "Quito", "Leeds",
];
const STATUSES: [&str; 4] = ["pending", "shipped", "delivered", "cancelled"];

/// Creates the sample shop database at `path` (the file is created if missing).
///
/// # Errors
/// Any SQLite error; creating it twice in the same file fails with "table categories already
/// exists" and leaves the file unchanged.
pub fn create_demo_database(path: &Path) -> Result<(), rusqlite::Error> {
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    let mut rng = SplitMix(0x5EED_5110_95AD_0001);

    let mut insert =
        tx.prepare("INSERT INTO categories (id, name, description) VALUES (?1, ?2, ?3)")?;
    for (i, (name, description)) in CATEGORIES.iter().enumerate() {
        insert.execute(params![i as i64 + 1, name, description])?;
    }
    drop(insert);

    let mut prices = Vec::with_capacity(DEMO_PRODUCTS);
    let mut insert = tx.prepare(
        "INSERT INTO products (id, category_id, name, price, stock, discontinued) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for id in 1..=DEMO_PRODUCTS {
        let category = rng.below(DEMO_CATEGORIES);
        let name = format!(
            "{} {}",
            ADJECTIVES[rng.below(ADJECTIVES.len())],
            NOUNS[category][rng.below(3)]
        );
        let price = (rng.below(9_900) + 100) as f64 / 100.0;
        prices.push(price);
        let discontinued = rng.below(10) == 0;
        insert.execute(params![
            id as i64,
            category as i64 + 1,
            name,
            price,
            rng.below(200) as i64,
            discontinued
        ])?;
    }
    drop(insert);

    let mut insert = tx.prepare(
        "INSERT INTO customers (id, name, email, city, joined_on) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for id in 1..=DEMO_CUSTOMERS {
        let first = FIRST[rng.below(FIRST.len())];
        let last = LAST[rng.below(LAST.len())];
        let email = format!(
            "{}.{}{id}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        // About one customer in eight has no city on file.
        let city = (rng.below(8) != 0).then(|| CITIES[rng.below(CITIES.len())]);
        let joined = iso_date(DAY_2023_01_01 + rng.below(365) as i64);
        insert.execute(params![
            id as i64,
            format!("{first} {last}"),
            email,
            city,
            joined
        ])?;
    }
    drop(insert);

    let mut order = tx.prepare(
        "INSERT INTO orders (id, customer_id, ordered_on, status, note) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut item = tx.prepare(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for id in 1..=DEMO_ORDERS {
        let customer = rng.below(DEMO_CUSTOMERS) + 1;
        let day = DAY_2024_01_01 + rng.below(540) as i64;
        let status = STATUSES[rng.below(STATUSES.len())];
        let note = (rng.below(20) == 0).then_some("gift wrap, please");
        order.execute(params![
            id as i64,
            customer as i64,
            iso_date(day),
            status,
            note
        ])?;
        // Distinct products per order: a random start and stride through the catalogue.
        let lines = rng.below(4) + 1;
        let start = rng.below(DEMO_PRODUCTS);
        let stride = rng.below(7) + 1;
        for line in 0..lines {
            let product = (start + line * stride) % DEMO_PRODUCTS;
            item.execute(params![
                id as i64,
                product as i64 + 1,
                rng.below(3) as i64 + 1,
                prices[product]
            ])?;
        }
    }
    drop(order);
    drop(item);
    tx.commit()
}

/// Days from 1970-01-01 to 2023-01-01 and 2024-01-01.
const DAY_2023_01_01: i64 = 19_358;
const DAY_2024_01_01: i64 = 19_723;

/// `YYYY-MM-DD` for a day count since 1970-01-01 (Howard Hinnant's civil-from-days).
fn iso_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// SplitMix64: tiny, seeded, and the same on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0; the tiny modulo bias does not matter for sample data).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dates_are_right() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(DAY_2023_01_01), "2023-01-01");
        assert_eq!(iso_date(DAY_2024_01_01), "2024-01-01");
        assert_eq!(iso_date(DAY_2024_01_01 + 59), "2024-02-29");
    }

    #[test]
    fn demo_database_is_deterministic_and_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        create_demo_database(&a).unwrap();
        create_demo_database(&b).unwrap();
        let dump = |p: &Path| {
            let conn = Connection::open(p).unwrap();
            conn.query_row(
                "SELECT group_concat(x, ',') FROM (SELECT (SELECT count(*) FROM order_items) || \
                 ':' || (SELECT sum(total) FROM order_totals) || ':' || \
                 (SELECT group_concat(email) FROM customers WHERE id < 5) AS x)",
                [],
                |row| row.get::<_, String>(0),
            )
            .unwrap()
        };
        assert_eq!(dump(&a), dump(&b));
        let conn = Connection::open(&a).unwrap();
        let violations: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(violations, 0);
        let items: i64 = conn
            .query_row("SELECT count(*) FROM order_items", [], |r| r.get(0))
            .unwrap();
        assert!(items > 3_000, "{items}");
        assert!(create_demo_database(&a).is_err());
    }
}
