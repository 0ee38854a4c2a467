// Reads the app's HTTP endpoints (app.py); the session cookie rides along.
const api = (path) => fetch(`/_/api${path}`).then((r) => r.json());

const { visits } = await api("/visits");
document.querySelector("#visits").textContent = `Visits in this session: ${visits}`;

const list = document.querySelector("#items");
for (const item of await api("/items")) {
  const { cents, currency } = await api(`/items/${item.id}/price`);
  const li = document.createElement("li");
  li.textContent = `${item.name} (${item.tags.join(", ")})`;
  const price = document.createElement("span");
  price.className = "price";
  price.textContent = `${(cents / 100).toFixed(2)} ${currency}`;
  li.append(price);
  list.append(li);
}

// A background task: launched by an endpoint, its progress polled until it ends.
document.querySelector("#restock").addEventListener("click", async () => {
  const { id } = await fetch("/_/api/restock", { method: "POST" }).then((r) => r.json());
  for (;;) {
    const { status, progress } = await api(`/tasks/${id}`);
    document.querySelector("#progress").value = progress;
    document.querySelector("#status").textContent = status;
    if (status !== "running") break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
});
