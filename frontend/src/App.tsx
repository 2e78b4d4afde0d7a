import { createBrowserRouter, RouterProvider, type RouteObject } from "react-router";
import { Layout } from "./components/Layout";
import { HomePage } from "./pages/HomePage";
import { NotFound } from "./pages/NotFound";

/** Pages load on first visit (their own chunks: charts and the graph library stay out of the
 * entry bundle); the home page and the layout ship with it. */
export const routes: RouteObject[] = [
  {
    path: "/",
    element: <Layout />,
    children: [
      { index: true, element: <HomePage /> },
      { path: "saes/:saeId", lazy: () => import("./pages/SaePage").then((m) => ({ Component: m.SaePage })) },
      {
        path: "saes/:saeId/features/:index",
        lazy: () => import("./pages/FeaturePage").then((m) => ({ Component: m.FeaturePage })),
      },
      { path: "saes/:saeId/try", lazy: () => import("./pages/TryPage").then((m) => ({ Component: m.TryPage })) },
      { path: "compare", lazy: () => import("./pages/ComparePage").then((m) => ({ Component: m.ComparePage })) },
      { path: "search", lazy: () => import("./pages/SearchPage").then((m) => ({ Component: m.SearchPage })) },
      { path: "steer", lazy: () => import("./pages/SteerPage").then((m) => ({ Component: m.SteerPage })) },
      { path: "jobs", lazy: () => import("./pages/JobsPage").then((m) => ({ Component: m.JobsPage })) },
      { path: "jobs/:jobId", lazy: () => import("./pages/JobPage").then((m) => ({ Component: m.JobPage })) },
      { path: "circuits", lazy: () => import("./pages/CircuitsPage").then((m) => ({ Component: m.CircuitsPage })) },
      {
        path: "circuits/:graphId",
        lazy: () => import("./pages/CircuitPage").then((m) => ({ Component: m.CircuitPage })),
      },
      { path: "*", element: <NotFound /> },
    ],
  },
];

const router = createBrowserRouter(routes);

export function App() {
  return <RouterProvider router={router} />;
}
