# One image for the API, the worker and the sandbox provider; the command picks the role.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY tsconfig.json ./
COPY src ./src
ENV NODE_ENV=production
USER node
CMD ["npx", "tsx", "src/client/main.ts"]
