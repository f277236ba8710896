import { useEffect, useState } from "react";

type Theme = "dark" | "light";
const KEY = "aitrader.theme";

export function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem(KEY) as Theme | null) ?? "dark");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem(KEY, theme);
  }, [theme]);
  const next = theme === "dark" ? "light" : "dark";
  return (
    <button className="ghost" onClick={() => setTheme(next)} aria-label={`Switch to ${next} theme`} title={`Switch to ${next} theme`}>
      {theme === "dark" ? "☾ Dark" : "☀ Light"}
    </button>
  );
}
