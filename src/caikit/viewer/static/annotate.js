// caikit view --annotate: keys for the answer buttons (the form works without this script too).
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
  const button = { a: "choose-left", 1: "choose-left", b: "choose-right", 2: "choose-right", t: "choose-skip", " ": "choose-skip" }[event.key.toLowerCase()];
  const target = button && document.getElementById(button);
  if (!target || target.form.dataset.sent) return;
  event.preventDefault();
  target.form.dataset.sent = "1"; // one answer per page, however fast the keys come
  target.click();
});
